//! Dataset loaders (GTA5, SYNTHIA, Cityscapes) and the prefetching batch pipeline.
