"""Dispatch: turning a token allocation into provider calls.

``provider_settings`` maps a funded output budget (tokens, reasoning included) for a LiteLLM
model name to the keyword arguments that cap that model's generation.
"""

from clear_middleware.dispatch.provider_settings import (
    ProviderSettings,
    effort_for_budget,
    provider_settings,
)

__all__ = ["ProviderSettings", "effort_for_budget", "provider_settings"]
