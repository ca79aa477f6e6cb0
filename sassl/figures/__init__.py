"""Every figure of the workbench, one module per subject; each returns a figure and leaves saving to save.py.

save.py (HTML always, PNG within a time limit), training.py (curves, augmentation record), evaluation.py (top-1,
shape bias), comparison.py (variants, the paired forest plot, gain against style distance), style_space.py
(t-SNE, overlap heatmaps), sheet.py (contact sheets of images), views.py (grids of augmented views).
"""
