"""The GPU proof: pieces to carry a runtime to a lent GPU machine, and the proof that runs there."""
