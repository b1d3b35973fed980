"""CLI sub-commands that belong to the core (registered as ``geo_rs.commands`` entry points)."""
