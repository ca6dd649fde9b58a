"""Training the priors: the StyleGAN2 recipe (``recipe``) and its discriminator (``discriminator``)."""
