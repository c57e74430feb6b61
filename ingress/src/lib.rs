//! lb's ingress: the reverse proxy that serves every service's domains over
//! HTTP and HTTPS, routed by a [`lb_model::ingress::RouteTable`] it is fed
//! through a watch channel.
