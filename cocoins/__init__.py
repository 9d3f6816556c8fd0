"""CoCoIns: consistent subject generation via contrastive instantiated concepts."""
