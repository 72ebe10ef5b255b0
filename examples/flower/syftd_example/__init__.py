"""A Flower app whose ClientApp honours syftd's stop file (README, "Flower")."""
