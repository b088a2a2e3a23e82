"""Redis plumbing shared by the Redis implementations: the backend factory (`backend`) and the Lua
scripts (`scripts`, `lua/`)."""
