"""`gradnas export`: write a run's evaluation network as a state dict, a torch.export program, ONNX or
TorchScript (gradnas.export)."""
from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

EPILOG = ("state_dict: torch.load(FILE, weights_only=True) into gradnas.load_network(RUN, weights=False); pt2: "
          "torch.export.load(FILE).module(); onnx: onnxruntime.InferenceSession(FILE) (input 'images'); "
          "torchscript: torch.jit.load(FILE). All in eval mode, float32 N x C x H x W images in, logits out.")


def add_parser(sub):
    from gradnas.export import FORMATS
    p = sub.add_parser("export", help="write a trained network for use outside gradnas (pt2, onnx, torchscript, "
                                      "state_dict)",
                       description="Export the evaluation network of RUN in eval mode: a training run folder gives "
                                   "its trained network (last checkpoint), a search run folder, genotype file, "
                                   "genotype string or published name (DARTS_V2) its untrained network, shaped as "
                                   "gradnas.load_network does. The input shape (channels, image size) is the "
                                   "run's.",
                       epilog=EPILOG)
    p.add_argument("run", metavar="RUN", help="training run folder (or search run, genotype file/string/name)")
    p.add_argument("--format", required=True, choices=FORMATS, help="file format (onnx needs the export extra: "
                                                                    "pip install 'gradnas[export]')")
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write (e.g. net.pt2, net.onnx)")
    p.add_argument("--pick", choices=("best", "last"), help="for a search run folder: the genotype of the epoch with "
                                                          "the best validation accuracy (default, as gradnas train) "
                                                          "or its last epoch's")
    return p


def run(args) -> int:
    from gradnas.export import export_source
    path, plan = export_source(args.run, args.out, format=args.format, pick=args.pick)
    c, h, w = plan.input_shape
    weights = "trained weights" if plan.checkpoint is not None else "untrained, initial weights"
    logger.info(f"exported the {plan.kind}'s network ({weights}; {plan.genotype.space} genotype, input N x {c} x {h} "
                f"x {w}, {plan.num_classes} classes) as {args.format} to {path}")
    print(path)
    return 0
