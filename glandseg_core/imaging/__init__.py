"""Image files in and out: decoded pixels, images and label maps, TIFF formats, the inputs a command names."""
