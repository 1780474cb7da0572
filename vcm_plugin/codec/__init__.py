"""Codec core: container, entropy coding, latent backends, palette diffusion, the Codec API."""
