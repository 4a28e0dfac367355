"""Pure tensor math of the papers, no TFF: masks and placement (incl. Eq. 2), the Eq. 1 schedule."""
