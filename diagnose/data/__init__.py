"""Datasets as whole uint8 tensors on the training device (`datasets`, read from `idx` and `cifar` files or made by
`synthetic`), and the batches cut from them (`batches`); `sources` says where each published dataset comes from.

Nothing is imported here: the config schema reads `sources` without torch."""
