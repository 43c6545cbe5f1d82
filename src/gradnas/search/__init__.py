"""Search methods and the search loop. Importing the package registers the built-in methods (single-level,
darts, milenas, pvll) in the one registry, ``gradnas.search.algorithm.METHODS``."""
from gradnas.search import methods, pvll_search  # noqa: F401  (registration)
