"""clear-middleware: shadow-price allocation of reasoning-token budgets."""
__version__ = "0.1.0"
