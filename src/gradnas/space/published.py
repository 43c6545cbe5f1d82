"""The published cells gradnas knows by name (``--genotype DARTS_V2``; gradnas.genotypes.named()).

Each entry is the cell in gradnas's canonical string (gradnas.space.genotype) and where it was published. The
cells were read from the authors' ``genotypes.py`` files (the commits named in each source) with the DARTS-form
reader (gradnas.space.darts_form): the node numbering is the same, only the two edges of a node are sorted.

DARTS-space cells that gradnas cannot build are not listed: NASNet and AmoebaNet (in the same files) use ops
outside the DARTS op table (sep_conv_7x7, conv_7x1_1x7), nodes whose two edges read the same input, five
nodes, and concats that leave out nodes used as inputs.

MiLeNAS (He et al., CVPR 2020) entries keep the names of the MiLeNAS repository's file behind ``MILENAS_``;
its DARTS_V1 / DARTS_V2 there are DARTS's and listed once, under DARTS.
"""
from __future__ import annotations

from typing import NamedTuple


class Published(NamedTuple):
    text: str    # the cell pair in gradnas's canonical string
    source: str  # the paper and the file it was published in


_DARTS = "DARTS (Liu et al., ICLR 2019): {} in github.com/quark0/darts cnn/genotypes.py @ f276dd3"
_PDARTS = "P-DARTS (Chen et al., ICCV 2019): {} in github.com/chenxin061/pdarts genotypes.py @ b880e87"
_MILENAS = "MiLeNAS (He et al., CVPR 2020): {} in github.com/chaoyanghe/MiLeNAS search_space/genotypes.py @ ce91b6b"


def _cell(name: str, source: str, *parts: str) -> tuple:
    return name, Published("".join(parts), source.format(name))


def _milenas(name: str, *parts: str) -> tuple:
    return "MILENAS_" + name, Published("".join(parts), _MILENAS.format(name))


# DARTS_V1: first-order search, DARTS_V2: second-order (the paper's CIFAR-10 cell, 3.3M parameters).
PUBLISHED = dict([
    _cell("DARTS_V1", _DARTS,
          "normal=|sep_conv_3x3~0|sep_conv_3x3~1|+|skip_connect~0|sep_conv_3x3~1|+"
          "|skip_connect~0|sep_conv_3x3~1|+|sep_conv_3x3~0|skip_connect~2|;"
          "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|skip_connect~2|+"
          "|max_pool_3x3~0|skip_connect~2|+|avg_pool_3x3~0|skip_connect~2|"),
    _cell("DARTS_V2", _DARTS,
          "normal=|sep_conv_3x3~0|sep_conv_3x3~1|+|sep_conv_3x3~0|sep_conv_3x3~1|+"
          "|skip_connect~0|sep_conv_3x3~1|+|skip_connect~0|dil_conv_3x3~2|;"
          "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~1|skip_connect~2|+"
          "|max_pool_3x3~0|skip_connect~2|+|max_pool_3x3~1|skip_connect~2|"),
    _cell("PDARTS", _PDARTS,
          "normal=|skip_connect~0|dil_conv_3x3~1|+|skip_connect~0|sep_conv_3x3~1|+"
          "|sep_conv_3x3~1|sep_conv_3x3~3|+|sep_conv_3x3~0|dil_conv_5x5~4|;"
          "reduce=|avg_pool_3x3~0|sep_conv_5x5~1|+|sep_conv_3x3~0|dil_conv_5x5~2|+"
          "|max_pool_3x3~0|dil_conv_3x3~1|+|dil_conv_3x3~1|dil_conv_5x5~3|"),
    _milenas("V2_r2_e50",
          "normal=|sep_conv_3x3~0|sep_conv_5x5~1|+|sep_conv_3x3~0|sep_conv_3x3~2|+"
          "|skip_connect~0|sep_conv_3x3~1|+|skip_connect~0|dil_conv_3x3~1|;"
          "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|max_pool_3x3~1|+"
          "|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|max_pool_3x3~1|"),
    _milenas("V2_r2_e100",
          "normal=|sep_conv_3x3~0|sep_conv_3x3~1|+|skip_connect~0|sep_conv_3x3~1|+"
          "|skip_connect~0|skip_connect~1|+|skip_connect~0|sep_conv_5x5~1|;"
          "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|skip_connect~2|+"
          "|avg_pool_3x3~0|skip_connect~2|+|avg_pool_3x3~0|skip_connect~2|"),
    _milenas("V2_r3_e50",
          "normal=|sep_conv_3x3~0|sep_conv_3x3~1|+|sep_conv_3x3~0|sep_conv_3x3~2|+"
          "|skip_connect~0|sep_conv_3x3~1|+|skip_connect~0|sep_conv_3x3~1|;"
          "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|max_pool_3x3~1|+"
          "|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|skip_connect~2|"),
    _milenas("V2_r3_e100",
          "normal=|sep_conv_3x3~0|sep_conv_3x3~1|+|sep_conv_3x3~0|sep_conv_3x3~1|+"
          "|skip_connect~0|sep_conv_3x3~1|+|sep_conv_3x3~0|skip_connect~1|;"
          "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|avg_pool_3x3~1|dil_conv_5x5~2|+"
          "|avg_pool_3x3~1|dil_conv_5x5~2|+|avg_pool_3x3~1|skip_connect~2|"),
    _milenas("V2_r4_e50",
          "normal=|sep_conv_3x3~0|sep_conv_3x3~1|+|sep_conv_3x3~0|sep_conv_3x3~1|+"
          "|sep_conv_3x3~0|sep_conv_3x3~1|+|skip_connect~0|sep_conv_3x3~1|;"
          "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|max_pool_3x3~1|+"
          "|max_pool_3x3~0|skip_connect~2|+|max_pool_3x3~0|skip_connect~2|"),
    _milenas("V2_r4_e100",
          "normal=|skip_connect~0|sep_conv_3x3~1|+|sep_conv_3x3~0|sep_conv_3x3~1|+"
          "|skip_connect~0|sep_conv_3x3~1|+|skip_connect~0|dil_conv_3x3~1|;"
          "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|skip_connect~2|+"
          "|max_pool_3x3~0|skip_connect~2|+|skip_connect~2|skip_connect~3|"),
    _milenas("V2_r5_e50",
          "normal=|sep_conv_3x3~0|sep_conv_3x3~1|+|sep_conv_3x3~0|sep_conv_3x3~2|+"
          "|skip_connect~0|sep_conv_3x3~1|+|skip_connect~0|sep_conv_3x3~1|;"
          "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|max_pool_3x3~1|+"
          "|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|skip_connect~2|"),
    _milenas("V2_r5_e100",
          "normal=|sep_conv_3x3~0|sep_conv_3x3~1|+|skip_connect~0|sep_conv_3x3~1|+"
          "|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|;"
          "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|avg_pool_3x3~0|dil_conv_3x3~2|+"
          "|max_pool_3x3~0|skip_connect~2|+|max_pool_3x3~0|skip_connect~2|"),
    _milenas("v2_r2_e200",
          "normal=|sep_conv_3x3~0|skip_connect~1|+|skip_connect~0|skip_connect~2|+"
          "|skip_connect~0|skip_connect~2|+|skip_connect~0|skip_connect~2|;"
          "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|skip_connect~2|+"
          "|max_pool_3x3~0|skip_connect~2|+|avg_pool_3x3~0|skip_connect~2|"),
    _milenas("v2_r3_e200",
          "normal=|skip_connect~0|skip_connect~1|+|sep_conv_3x3~0|skip_connect~2|+"
          "|skip_connect~0|skip_connect~1|+|sep_conv_3x3~0|skip_connect~1|;"
          "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|avg_pool_3x3~1|dil_conv_5x5~2|+"
          "|max_pool_3x3~1|dil_conv_5x5~3|+|avg_pool_3x3~1|skip_connect~3|"),
    _milenas("v2_r4_e200",
          "normal=|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~2|+"
          "|skip_connect~0|skip_connect~2|+|max_pool_3x3~0|skip_connect~2|;"
          "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|skip_connect~2|+"
          "|max_pool_3x3~0|skip_connect~2|+|max_pool_3x3~0|skip_connect~2|"),
    _milenas("v2_r5_e200",
          "normal=|sep_conv_3x3~0|skip_connect~1|+|skip_connect~0|skip_connect~2|+"
          "|sep_conv_3x3~0|skip_connect~2|+|max_pool_3x3~0|skip_connect~2|;"
          "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|avg_pool_3x3~0|max_pool_3x3~1|+"
          "|max_pool_3x3~0|skip_connect~2|+|max_pool_3x3~0|skip_connect~2|"),
    _milenas("l1_r0_e200",
          "normal=|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~2|+"
          "|sep_conv_3x3~0|skip_connect~2|+|skip_connect~0|skip_connect~2|;"
          "reduce=|avg_pool_3x3~0|max_pool_3x3~1|+|avg_pool_3x3~1|skip_connect~2|+"
          "|avg_pool_3x3~1|skip_connect~2|+|avg_pool_3x3~1|skip_connect~2|"),
    _milenas("l05_r2_e200",
          "normal=|sep_conv_3x3~0|skip_connect~1|+|skip_connect~0|skip_connect~2|+"
          "|skip_connect~0|skip_connect~2|+|skip_connect~0|skip_connect~1|;"
          "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|max_pool_3x3~1|+"
          "|avg_pool_3x3~1|skip_connect~2|+|skip_connect~2|skip_connect~3|"),
    _milenas("r112_e50_48_n6_r2",
          "normal=|sep_conv_3x3~0|sep_conv_3x3~1|+|skip_connect~0|sep_conv_3x3~1|+"
          "|skip_connect~0|sep_conv_3x3~1|+|sep_conv_3x3~0|dil_conv_5x5~1|;"
          "reduce=|skip_connect~0|max_pool_3x3~1|+|max_pool_3x3~0|dil_conv_5x5~2|+"
          "|max_pool_3x3~0|sep_conv_3x3~2|+|avg_pool_3x3~1|skip_connect~2|"),
    _milenas("r116_e100_92_n5_r1",
          "normal=|dil_conv_5x5~0|sep_conv_3x3~1|+|sep_conv_3x3~0|sep_conv_3x3~1|+"
          "|skip_connect~0|sep_conv_3x3~1|+|skip_connect~0|skip_connect~1|;"
          "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|max_pool_3x3~1|+"
          "|skip_connect~0|dil_conv_5x5~2|+|max_pool_3x3~0|max_pool_3x3~1|"),
    _milenas("r116_e100_69_n5_r0",
          "normal=|sep_conv_5x5~0|sep_conv_3x3~1|+|sep_conv_3x3~0|sep_conv_3x3~1|+"
          "|skip_connect~0|sep_conv_3x3~1|+|skip_connect~0|skip_connect~1|;"
          "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|max_pool_3x3~1|+"
          "|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|max_pool_3x3~1|"),
    _milenas("r100_e50_48_n7r1",
          "normal=|sep_conv_3x3~0|sep_conv_3x3~1|+|dil_conv_3x3~0|sep_conv_3x3~1|+"
          "|skip_connect~0|sep_conv_3x3~1|+|dil_conv_5x5~0|dil_conv_3x3~1|;"
          "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|sep_conv_3x3~0|max_pool_3x3~1|+"
          "|max_pool_3x3~0|skip_connect~2|+|skip_connect~0|skip_connect~2|"),
    _milenas("r101_e50_48_n7r3",
          "normal=|sep_conv_3x3~0|sep_conv_3x3~1|+|dil_conv_3x3~0|sep_conv_3x3~1|+"
          "|skip_connect~0|sep_conv_3x3~1|+|sep_conv_3x3~0|sep_conv_5x5~1|;"
          "reduce=|dil_conv_3x3~0|sep_conv_3x3~1|+|max_pool_3x3~0|skip_connect~2|+"
          "|skip_connect~2|dil_conv_5x5~3|+|max_pool_3x3~0|skip_connect~2|"),
    _milenas("r102_e50_45_n8r1",
          "normal=|sep_conv_3x3~0|sep_conv_3x3~1|+|sep_conv_3x3~0|sep_conv_3x3~1|+"
          "|sep_conv_3x3~0|sep_conv_5x5~1|+|sep_conv_5x5~0|dil_conv_3x3~1|;"
          "reduce=|max_pool_3x3~0|sep_conv_3x3~1|+|max_pool_3x3~0|skip_connect~2|+"
          "|max_pool_3x3~0|skip_connect~2|+|max_pool_3x3~0|skip_connect~2|"),
    _milenas("r103_e50_45_n7r2",
          "normal=|sep_conv_3x3~0|sep_conv_3x3~1|+|sep_conv_5x5~0|sep_conv_3x3~1|+"
          "|skip_connect~0|sep_conv_3x3~1|+|sep_conv_3x3~0|sep_conv_3x3~1|;"
          "reduce=|max_pool_3x3~0|sep_conv_5x5~1|+|max_pool_3x3~0|sep_conv_5x5~2|+"
          "|max_pool_3x3~0|skip_connect~2|+|avg_pool_3x3~0|skip_connect~2|"),
    _milenas("r116_e100_95_n3r0",
          "normal=|sep_conv_3x3~0|sep_conv_3x3~1|+|skip_connect~0|skip_connect~1|+"
          "|skip_connect~0|sep_conv_3x3~1|+|skip_connect~0|skip_connect~1|;"
          "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|skip_connect~2|+"
          "|max_pool_3x3~0|skip_connect~2|+|max_pool_3x3~0|skip_connect~2|"),
    _milenas("r117_e100_98_n3r0",
          "normal=|sep_conv_3x3~0|sep_conv_3x3~1|+|skip_connect~0|skip_connect~1|+"
          "|skip_connect~0|sep_conv_3x3~1|+|skip_connect~0|skip_connect~1|;"
          "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|skip_connect~2|+"
          "|avg_pool_3x3~0|skip_connect~2|+|avg_pool_3x3~1|skip_connect~2|"),
    _milenas("r118_e100_92_n4r1",
          "normal=|skip_connect~0|sep_conv_3x3~1|+|sep_conv_3x3~0|sep_conv_3x3~1|+"
          "|skip_connect~0|sep_conv_3x3~1|+|skip_connect~0|skip_connect~1|;"
          "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|sep_conv_3x3~2|+"
          "|avg_pool_3x3~1|skip_connect~2|+|max_pool_3x3~0|skip_connect~2|"),
    _milenas("r119_e100_86_n4r0",
          "normal=|sep_conv_3x3~0|sep_conv_3x3~1|+|skip_connect~0|sep_conv_3x3~1|+"
          "|skip_connect~0|sep_conv_3x3~1|+|skip_connect~0|skip_connect~1|;"
          "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|skip_connect~2|+"
          "|max_pool_3x3~0|skip_connect~2|+|max_pool_3x3~1|skip_connect~2|"),
    _milenas("r104_e200_185_n1r0_91_116",
          "normal=|skip_connect~0|dil_conv_3x3~1|+|skip_connect~0|skip_connect~2|+"
          "|skip_connect~0|skip_connect~2|+|skip_connect~0|skip_connect~1|;"
          "reduce=|avg_pool_3x3~0|avg_pool_3x3~1|+|avg_pool_3x3~0|skip_connect~2|+"
          "|avg_pool_3x3~0|skip_connect~2|+|max_pool_3x3~1|skip_connect~2|"),
    _milenas("r104_e200_197_n2r0_91_188",
          "normal=|skip_connect~0|dil_conv_3x3~1|+|sep_conv_3x3~0|skip_connect~2|+"
          "|skip_connect~0|skip_connect~2|+|skip_connect~0|skip_connect~1|;"
          "reduce=|avg_pool_3x3~0|avg_pool_3x3~1|+|avg_pool_3x3~0|skip_connect~2|+"
          "|avg_pool_3x3~0|skip_connect~2|+|max_pool_3x3~1|skip_connect~2|"),
    _milenas("r104_e200_131_n3r0_90_528",
          "normal=|sep_conv_3x3~0|sep_conv_3x3~1|+|skip_connect~0|sep_conv_3x3~1|+"
          "|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|;"
          "reduce=|avg_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|max_pool_3x3~1|+"
          "|avg_pool_3x3~0|skip_connect~2|+|max_pool_3x3~1|skip_connect~2|"),
    _milenas("r104_e200_120_n4r0_90_32",
          "normal=|sep_conv_3x3~0|sep_conv_3x3~1|+|skip_connect~0|sep_conv_3x3~1|+"
          "|skip_connect~0|sep_conv_3x3~1|+|skip_connect~0|skip_connect~1|;"
          "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|max_pool_3x3~1|+"
          "|avg_pool_3x3~0|skip_connect~2|+|max_pool_3x3~1|skip_connect~2|"),
    _milenas("r104_e200_106_n5r0_89_776",
          "normal=|sep_conv_3x3~0|sep_conv_3x3~1|+|skip_connect~0|sep_conv_3x3~1|+"
          "|skip_connect~0|sep_conv_3x3~1|+|skip_connect~0|sep_conv_3x3~1|;"
          "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|max_pool_3x3~1|+"
          "|avg_pool_3x3~0|skip_connect~2|+|max_pool_3x3~1|skip_connect~2|"),
    _milenas("r104_e200_50_n6r0_87_056",
          "normal=|sep_conv_3x3~0|sep_conv_3x3~1|+|skip_connect~0|sep_conv_3x3~1|+"
          "|skip_connect~0|sep_conv_3x3~1|+|sep_conv_3x3~0|sep_conv_3x3~1|;"
          "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|max_pool_3x3~1|+"
          "|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|max_pool_3x3~1|"),
    _milenas("r104_e200_43_n7r0_85_824",
          "normal=|sep_conv_3x3~0|sep_conv_3x3~1|+|sep_conv_3x3~0|sep_conv_3x3~1|+"
          "|skip_connect~0|sep_conv_3x3~1|+|sep_conv_3x3~0|sep_conv_3x3~1|;"
          "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|max_pool_3x3~1|+"
          "|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|max_pool_3x3~1|"),
    _milenas("r306_2nd_e50_49_n7r8",
          "normal=|sep_conv_3x3~0|sep_conv_3x3~1|+|sep_conv_5x5~0|sep_conv_5x5~1|+"
          "|sep_conv_3x3~0|sep_conv_3x3~1|+|skip_connect~0|dil_conv_3x3~1|;"
          "reduce=|sep_conv_5x5~0|sep_conv_5x5~1|+|sep_conv_3x3~0|sep_conv_5x5~2|+"
          "|sep_conv_3x3~0|sep_conv_3x3~3|+|sep_conv_3x3~0|sep_conv_5x5~2|"),
    _milenas("r803_2nd_e50_46_n7r1",
          "normal=|sep_conv_5x5~0|sep_conv_3x3~1|+|sep_conv_3x3~0|sep_conv_3x3~1|+"
          "|skip_connect~0|sep_conv_3x3~1|+|sep_conv_3x3~0|dil_conv_3x3~1|;"
          "reduce=|skip_connect~0|dil_conv_5x5~1|+|max_pool_3x3~0|skip_connect~2|+"
          "|max_pool_3x3~0|skip_connect~2|+|max_pool_3x3~0|skip_connect~2|"),
    _milenas("r904_e80_75_n4_r0",
          "normal=|skip_connect~0|dil_conv_3x3~1|+|skip_connect~0|sep_conv_3x3~1|+"
          "|sep_conv_3x3~0|sep_conv_3x3~1|+|skip_connect~0|skip_connect~1|;"
          "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|avg_pool_3x3~0|max_pool_3x3~1|+"
          "|skip_connect~2|skip_connect~3|+|avg_pool_3x3~0|skip_connect~3|"),
    _milenas("r902_e200_192_n2_r1",
          "normal=|sep_conv_3x3~0|dil_conv_3x3~1|+|skip_connect~0|skip_connect~2|+"
          "|skip_connect~0|skip_connect~2|+|max_pool_3x3~0|skip_connect~2|;"
          "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|avg_pool_3x3~0|sep_conv_3x3~1|+"
          "|skip_connect~2|skip_connect~3|+|skip_connect~2|skip_connect~3|"),
    _milenas("r902_e200_198_n2_r2",
          "normal=|sep_conv_3x3~0|dil_conv_3x3~1|+|skip_connect~0|skip_connect~2|+"
          "|skip_connect~0|skip_connect~2|+|max_pool_3x3~0|skip_connect~2|;"
          "reduce=|max_pool_3x3~0|dil_conv_3x3~1|+|avg_pool_3x3~0|sep_conv_3x3~1|+"
          "|skip_connect~2|skip_connect~3|+|skip_connect~2|skip_connect~3|"),
    _milenas("r902_e200_155_n3_r1",
          "normal=|sep_conv_3x3~0|dil_conv_3x3~1|+|skip_connect~0|skip_connect~2|+"
          "|skip_connect~0|sep_conv_3x3~1|+|max_pool_3x3~0|skip_connect~2|;"
          "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|sep_conv_3x3~1|+"
          "|skip_connect~2|skip_connect~3|+|skip_connect~2|skip_connect~3|"),
    _milenas("r902_e200_136_n4_r1",
          "normal=|sep_conv_3x3~0|dil_conv_3x3~1|+|skip_connect~0|sep_conv_3x3~1|+"
          "|skip_connect~0|sep_conv_3x3~1|+|max_pool_3x3~0|skip_connect~1|;"
          "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|sep_conv_3x3~1|+"
          "|max_pool_3x3~0|skip_connect~2|+|skip_connect~2|skip_connect~3|"),
    _milenas("r902_e200_104_n4_r2",
          "normal=|sep_conv_3x3~0|sep_conv_3x3~1|+|skip_connect~0|sep_conv_3x3~1|+"
          "|skip_connect~0|sep_conv_3x3~1|+|max_pool_3x3~0|max_pool_3x3~1|;"
          "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|sep_conv_3x3~1|+"
          "|max_pool_3x3~0|skip_connect~2|+|dil_conv_3x3~1|skip_connect~2|"),
    _milenas("r902_e200_62_n5_r0",
          "normal=|sep_conv_3x3~0|dil_conv_3x3~1|+|skip_connect~0|sep_conv_3x3~1|+"
          "|skip_connect~0|sep_conv_3x3~1|+|max_pool_3x3~0|sep_conv_3x3~1|;"
          "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|max_pool_3x3~1|+"
          "|max_pool_3x3~0|skip_connect~2|+|max_pool_3x3~0|skip_connect~2|"),
    _milenas("r902_e200_64_n5_r1",
          "normal=|sep_conv_3x3~0|dil_conv_3x3~1|+|skip_connect~0|sep_conv_3x3~1|+"
          "|skip_connect~0|sep_conv_3x3~1|+|max_pool_3x3~0|sep_conv_3x3~1|;"
          "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|sep_conv_3x3~1|+"
          "|max_pool_3x3~0|skip_connect~2|+|max_pool_3x3~0|skip_connect~2|"),
    _milenas("r902_e200_42_n6_r0",
          "normal=|sep_conv_3x3~0|sep_conv_3x3~1|+|skip_connect~0|sep_conv_3x3~1|+"
          "|sep_conv_3x3~0|sep_conv_3x3~1|+|max_pool_3x3~0|sep_conv_3x3~1|;"
          "reduce=|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|max_pool_3x3~1|+"
          "|max_pool_3x3~0|max_pool_3x3~1|+|max_pool_3x3~0|skip_connect~2|"),
    _milenas("r2001_e50_45_n8_r3",
          "normal=|sep_conv_3x3~0|sep_conv_3x3~1|+|sep_conv_3x3~0|dil_conv_3x3~1|+"
          "|sep_conv_3x3~0|dil_conv_3x3~1|+|sep_conv_5x5~0|sep_conv_3x3~1|;"
          "reduce=|max_pool_3x3~0|sep_conv_3x3~1|+|max_pool_3x3~0|dil_conv_5x5~2|+"
          "|max_pool_3x3~0|skip_connect~2|+|skip_connect~2|sep_conv_5x5~3|"),
    _milenas("GDAS_MIXED_LEVEL1",
          "normal=|sep_conv_3x3~0|max_pool_3x3~1|+|skip_connect~0|max_pool_3x3~1|+"
          "|skip_connect~0|skip_connect~1|+|sep_conv_5x5~0|skip_connect~1|;"
          "reduce=|sep_conv_5x5~0|sep_conv_5x5~1|+|sep_conv_5x5~0|sep_conv_3x3~1|+"
          "|sep_conv_3x3~1|sep_conv_5x5~2|+|sep_conv_5x5~0|sep_conv_5x5~1|"),
    _milenas("GDAS_MIXED_LEVEL2",
          "normal=|dil_conv_3x3~0|sep_conv_3x3~1|+|sep_conv_3x3~0|dil_conv_5x5~2|+"
          "|sep_conv_5x5~0|sep_conv_5x5~3|+|dil_conv_3x3~2|sep_conv_3x3~4|;"
          "reduce=|skip_connect~0|avg_pool_3x3~1|+|sep_conv_5x5~0|skip_connect~2|+"
          "|sep_conv_3x3~0|sep_conv_3x3~3|+|max_pool_3x3~0|skip_connect~4|"),
])
