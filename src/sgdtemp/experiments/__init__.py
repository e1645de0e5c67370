"""Studies that combine theory, landscapes, simulation and training, and return results."""
