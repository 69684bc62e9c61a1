"""The training engine every deep model trains on: a Lightning ``Trainer`` built from
cropscope's options (:mod:`~cropscope.engine.runner`), the tasks (:mod:`~cropscope.engine.tasks`)
and data modules (:mod:`~cropscope.engine.datamodules`), the recipe pieces
(:mod:`~cropscope.engine.recipe`: schedules, balanced losses, CutMix), safe resumable
checkpoints (:mod:`~cropscope.engine.checkpoints`), seeding, batched inference on the CPU
or a GPU (:mod:`~cropscope.engine.inference`), and the two loops built on them:
:func:`cropscope.engine.trainer.train_classifier` (pixel and patch classifiers) and
:func:`cropscope.engine.segmentation.train_segmentation` (AgriFM, H2Crop).

It sits below :mod:`cropscope.models` in the import layers (a deep classifier's ``fit`` runs
on it) and depends only on the core packages; run-level training (a registered model or
network into a run directory) is :mod:`cropscope.training`, above the models. Importing this
package is light: Lightning is imported when training starts.
"""

__all__: list[str] = []
