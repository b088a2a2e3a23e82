"""Apps (tenants): their configuration, how it is loaded, and lookups by id and key."""
