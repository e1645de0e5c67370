"""sgdtemp: make the temperature of SGD (learning rate over batch size) measurable and usable.

Based on Bradley, Gomez-Uribe & Vuyyuru, "Shift-curvature, SGD, and generalization"
(arXiv 2108.09507; Mach. Learn.: Sci. Technol. 3 045002, 2022).
"""

from __future__ import annotations

from sgdtemp.errors import UserError
from sgdtemp.theory.temperature import lr_for_temperature, temperature, without_replacement_factor

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # errors
    "UserError",
    # temperature
    "temperature",
    "lr_for_temperature",
    "without_replacement_factor",
]
