"""Development tooling, not used by a running worker: the local Kafka broker
(``streams kafka start|stop|status``) and the input generators for the reference topologies
(``streams generate NAME``)."""
