"""Tasks (pix2pix, cyclegan, cgan...) built on the shared trainer; found by name in the TASKS registry."""
