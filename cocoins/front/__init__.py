"""The user-facing front on a trained mapper: codes, characters, named-character prompts, stories, the web app."""
