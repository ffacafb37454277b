"""The actor side. The web layer uses `modelrouter.actors.system` only (and the relay type)."""
