"""Plugin functions for the example graphs: trust them with ``--plugins plantlib``."""
