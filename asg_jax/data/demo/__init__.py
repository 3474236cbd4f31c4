"""The generated demo data (docs/data.md "The synthetic demo", "Downstream datasets").

  synthetic.py    a miniature MIMIC-CXR-JPG + reports + Chest ImaGenome in the real layout
                  (`python -m asg_jax.data.demo.synthetic --out DIR`), built by the real
                  `mimic_cxr` builder
  report_text.py  the demo's report sentences and findings
  drawing.py      the chest-like radiographs with the findings drawn where the report says
  downstream.py   CheXpert- and SIIM-layout stand-ins for the transfer protocols
                  (`python -m asg_jax.data.demo.downstream --out DIR`)
  owned_dir.py    a generator writes only into a folder it created, removes only its files
"""
