"""The temperature monitor in other people's training loops: Lightning and ``transformers``.

Each integration is one callback (``callbacks=[TemperatureCallback(probe=...)]``) around
:class:`sgdtemp.monitor.TemperatureMonitor`, importing its framework only when it is imported
itself: :mod:`sgdtemp.integrations.lightning` and :mod:`sgdtemp.integrations.transformers`.
"""
