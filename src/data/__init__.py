"""Dataset readers, location and verification, and conversion to training arrays."""
