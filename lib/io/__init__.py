"""File safety: allow-listed unpickling of every format the project reads, atomic writes, file digests."""
