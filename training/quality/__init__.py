"""Judges of the generator's faces that took no part in training it: features of an ImageNet
network, a face detector, pixel statistics and an independently trained attribute model."""
