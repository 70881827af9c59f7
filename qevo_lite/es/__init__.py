"""Layer 4, es: the evolution strategy (configuration, engine, operators), its local and global stages,
and the tools that study it."""
