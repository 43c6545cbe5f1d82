"""`gradnas reproduce`: every table and figure of the papers as one command.

An experiment spec (:mod:`gradnas.reproduce.spec`, shipped in ``gradnas/configs/reproduce/``) names the
searches behind one result of a paper, its budgets (tiny | proxy | paper) and the paper's numbers and
orderings; :func:`reproduce` runs it (:mod:`gradnas.reproduce.runner`) and writes a report that sets the
runs' numbers (:mod:`gradnas.reproduce.measures`) beside the paper's.

    from gradnas.reproduce import reproduce
    reproduce("single-level-table3", "runs/t3", budget="proxy", data_dir="cifar10-jpeg.tar.gz")
"""
from gradnas.reproduce.measures import MEASURES, Measure
from gradnas.reproduce.runner import collect, plan, reproduce
from gradnas.reproduce.spec import BUDGETS, Budget, Spec, load_spec, parse_spec, shipped_specs

__all__ = ["BUDGETS", "MEASURES", "Budget", "Measure", "Spec", "collect", "load_spec", "parse_spec", "plan",
           "reproduce", "shipped_specs"]
