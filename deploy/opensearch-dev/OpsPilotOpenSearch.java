// Dev/test launcher for one real OpenSearch node in one JVM (see docs/adr/0003-opensearch-dev-node.md).
//
// Run by scripts/services in Java's single-file source mode:
//   java -Xms1g -Xmx1g -cp '<cache>/lib/*' deploy/opensearch-dev/OpsPilotOpenSearch.java \
//        -basePath .services/opensearch -numOfNode 1 -baseHttpPort 21200 -clusterName opspilot-dev
//
// Why not OpenSearchRunner.main directly:
//  * its getAvailableHttpPort() refuses any HTTP port above maxHttpPort (9299 by default), so
//    -baseHttpPort 21200 makes main() fail, and main() exits 1 without printing why;
//  * it never sets network.host or transport.port, and it reads no system properties, so the
//    node would bind the default transport range 9300-9400.
// This launcher lifts the port cap, binds HTTP and transport to loopback on fixed ports,
// prints any startup failure, then keeps the JVM alive until the node is closed (SIGTERM runs
// the shutdown hook, which closes the node gracefully).
//
// Cluster mode (`scripts/services up --cluster`, ADR 0028): three JVMs, one node each. The
// runner forces `discovery.type=single-node` when -numOfNode is 1, but only with putIfAbsent,
// after this callback: the system properties below replace it.
//   -Dopspilot.nodeName=os-1 -Dopspilot.discovery=zen
//   -Dopspilot.seedHosts=127.0.0.1:22801,127.0.0.1:22802,127.0.0.1:22803
//   -Dopspilot.initialManagers=os-1,os-2,os-3
import org.codelibs.opensearch.runner.OpenSearchRunner;

public class OpsPilotOpenSearch {
    public static void main(final String[] args) throws Exception {
        final String host = System.getProperty("opspilot.host", "127.0.0.1");
        final int transportPort = Integer.getInteger("opspilot.transportPort", 21300);
        final OpenSearchRunner runner = new OpenSearchRunner();
        runner.setMaxHttpPort(-1);
        runner.onBuild((number, settings) -> {
            settings.put("network.host", host);
            settings.put("transport.port", String.valueOf(transportPort + number - 1));
            final String discovery = System.getProperty("opspilot.discovery", "single-node");
            settings.put("discovery.type", discovery);
            final String nodeName = System.getProperty("opspilot.nodeName");
            if (nodeName != null) {
                settings.put("node.name", nodeName);
            }
            if (!"single-node".equals(discovery)) {
                settings.putList("discovery.seed_hosts",
                    System.getProperty("opspilot.seedHosts", "").split(","));
                settings.putList("cluster.initial_cluster_manager_nodes",
                    System.getProperty("opspilot.initialManagers", "").split(","));
            }
            // Test machines may have little free disk: never flip indices to read-only.
            settings.put("cluster.routing.allocation.disk.threshold_enabled", false);
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                runner.close();
            } catch (final Exception e) {
                e.printStackTrace();
            }
        }));
        try {
            runner.build(args);
        } catch (final Throwable t) {
            System.err.println("OpenSearch node failed to start:");
            t.printStackTrace();
            System.exit(1);
        }
        System.out.println("opspilot: OpenSearch node started on http://" + host);
        while (!runner.isClosed()) {
            Thread.sleep(2000);
        }
    }
}
