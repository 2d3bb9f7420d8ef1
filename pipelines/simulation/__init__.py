"""Graph-based Lagrangian particle simulation: shared features, graph layers, rollouts, data, and the GNS baseline.

Modules:
    features  kinematics in stored-step units (velocities, accelerations, semi-implicit Euler), random-walk noise,
              the normaliser, wall / velocity / edge features
    layers    MLP, InteractionNetwork, Processor, EncodeProcessDecode
    rollout   autoregressive rollouts with clamping and NaN detection, the constant-velocity baseline
    data      SimulationDataModule: LagrangeBench / GNS folders, on-the-fly training windows, whole-trajectory
              validation
    gns       the GNS model and its LightningModule
"""
