"""What travels between clients and server: lossless sparse codecs, quantizers and their exact sizes."""
