"""What a person reads: figures and tables drawn from objects and files that are already there
(a study, loss files, training logs, a comparison folder). Nothing here trains or searches.

    plots          learned curves, training curves; how every figure is written
    search_plots   a search's study: history, importance, Pareto front, per-trial values
    compare_plots  the figures of a loss comparison (``comparison`` reads its folder)
    overlay_plots  a checkpoint's predictions over the images
    compare_report the Markdown/CSV tables of a comparison, paired intervals
    names          display names of run folders

Each figure module imports matplotlib; import the one you need.
"""
