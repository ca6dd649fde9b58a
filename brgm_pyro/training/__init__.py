"""Training: the StyleGAN2 prior (``recipe``, ``discriminator``) and the Fashion-MNIST feature networks (``feature_nets``)."""
