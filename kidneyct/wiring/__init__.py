"""How each process is built from the settings (the only layer that reads them)."""
