"""dptlearn.viz: shapes, the shape tracer, and the course's figures, one module per topic.

    shapes.py      fmt_shape: the one shape formatter of every table and figure
    trace.py       trace_head -> ShapeTrace (which stage turned which shape into which), summary
    flow.py        plot_trace: a traced head's data flow, every arrow labelled with its shape
    images.py      numbered_patches, show_images, show_feature_maps
    tokens.py      plot_token_list: a ViT's layer outputs, the hooked ones highlighted
    fusion.py      upsample_positions, plot_align_corners, plot_odd_grid_crop
    postprocess.py plot_postprocess_curves: depth and confidence parametrisations
    stages.py      plot_stage_bars: one bar per head stage (MACs, memory, ...)
    overview.py    plot_dust3r_overview: DUSt3R in one picture
    trained.py     capture_stages, plot_trained_vs_random, plot_confidence_and_error, plot_two_view_points

Everything here imports the head, never the reverse; import the module you need
(``from dptlearn.viz.images import show_images``).
"""
