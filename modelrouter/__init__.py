"""modelrouter: an actor-based LLM gateway with fallback, strict limits and honest failures."""

__version__ = "0.1.0"
