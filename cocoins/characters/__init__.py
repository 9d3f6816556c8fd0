"""Characters as the pipeline reads them: latent codes (`codes`), named codes kept in a folder (`library`), and
prompts that name them (`prompts`). Below the pipeline; what stands above it (app, story, commands) is in
`cocoins.front`."""
