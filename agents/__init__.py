"""Things that write: model access behind one seam, the generator, the hint-giver."""
