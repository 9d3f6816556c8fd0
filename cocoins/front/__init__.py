"""What stands above the pipeline for its users: the character / story / app commands, story mode and the web
app. The pieces the pipeline itself reads (codes, the character library, named prompts) are in
`cocoins.characters`."""
