"""Small internal helpers shared by several subpackages (not public API)."""
