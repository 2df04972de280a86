"""Small helpers the other layers share, each in its own module and none importing another
part of autoloss except :mod:`autoloss.errors`: atomic writes (``atomic``), file locks
(``locks``), YAML files (``yaml_files``), storage URLs with masked passwords (``urls``), the
trust switch for user code and its loader (``trust``), statistics over seeds (``stats``), the user cache
directory (``cache``), trial attribute names (``trial_attrs``) and a run's plain or compressed
per-step log (``run_logs``). Import the module you need.
"""
