"""Graph-based Lagrangian particle simulation: features, graph layers, rollouts, data, GNS and GIOROM.

Modules:
    features  kinematics in stored-step units (velocities, accelerations, semi-implicit Euler), random-walk noise,
              the normaliser, wall / velocity / edge features
    layers    MLP, InteractionNetwork, Processor, EncodeProcessDecode
    rollout   autoregressive rollouts with clamping and NaN detection, the constant-velocity baseline
    data      SimulationDataModule: LagrangeBench / GNS folders, on-the-fly training windows, whole-trajectory
              validation
    gns       the GNS model (and NetworkSettings, the graph network's sizes)
    giorom    the GIOROM reduced-order model: sampling, sparse processor, kernel-integral query stage
    module    the LightningModules: GNSModule and GIOROMModule on a shared base (training, rollout evaluation)
    predict   ``geo3d predict``: RolloutWriter, one rollout file per test trajectory
    demo      the ``geo3d demo`` stage (run_stage)
"""
