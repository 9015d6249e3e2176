"""Datasets as whole tensors on the training device (`datasets`, read from `idx` and `cifar` files as uint8, made by
`synthetic`, or your own arrays from `arrays`, uint8 or float), and the batches cut from them (`batches`); `sources`
says where each published dataset comes from.

Nothing is imported here: the config schema reads `sources` without torch."""
