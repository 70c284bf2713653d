"""The two transformer stacks, under the official parameter names: LlamaGen's GPT and the
Llama-style decoder Janus-Pro, Emu3 and Lumina-mGPT share. Both take explicit positions, an
explicit visibility mask and cache slots, because ZipAR feeds several rows at once."""
