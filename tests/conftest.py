"""Shared test setup.

Tests run torch on one intra-op thread: the suite's tensors are small, where a second thread
only adds synchronization (10-25x slower simulations were measured on a loaded 2-core machine),
and one thread keeps floating-point reductions in a fixed order.
"""

import torch

torch.set_num_threads(1)
