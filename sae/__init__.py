"""hierlens.sae: sparse autoencoders."""
