"""The rules training and serving share, written once: torch-free, and importing neither side
(pyproject.toml [tool.importlinter]). Training and the services import them from here; a parity
test holds the two sides to each."""
