-- One database per service: they share the server, never a schema.
CREATE DATABASE intake;
CREATE DATABASE classification;
CREATE DATABASE routing;
CREATE DATABASE sla_timer;
CREATE DATABASE closure;
CREATE DATABASE console;
