"""The headless core: knows diffusion, never Qt."""
