// Waits until the cluster at args[0], whose cluster id is args[2], lists
// every node id in args[3..] as a live broker (metadata answered), for at
// most args[1] seconds. A broker of another cluster on that port (a port
// picked free and taken since) fails at once.
// Run as a single-file program: java -cp 'libs/*' Ready.java BOOTSTRAP SECS CLUSTER_ID ID...
import java.util.HashSet;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.DescribeClusterOptions;
import org.apache.kafka.common.Node;

public class Ready {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(Long.parseLong(args[1]));
        Set<Integer> want = new HashSet<>();
        String clusterId = args[2];
        for (int i = 3; i < args.length; i++) want.add(Integer.parseInt(args[i]));
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "3000");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "3000");
        p.put(AdminClientConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "500");
        String last = "no answer";
        try (Admin admin = Admin.create(p)) {
            while (System.nanoTime() < deadline) {
                try {
                    var cluster = admin.describeCluster(new DescribeClusterOptions().timeoutMs(3000));
                    String id = cluster.clusterId().get(4, TimeUnit.SECONDS);
                    if (!clusterId.equals(id)) {
                        System.err.println("Kafka at " + bootstrap + " is another cluster (" + id
                                + ", not " + clusterId + "): its port was taken");
                        System.exit(2);
                    }
                    Set<Integer> seen = new HashSet<>();
                    for (Node n : cluster.nodes().get(4, TimeUnit.SECONDS)) {
                        seen.add(n.id());
                    }
                    if (seen.containsAll(want)) return;
                    last = "live brokers " + seen + ", waiting for " + want;
                } catch (Exception e) {
                    last = e.toString();
                }
                Thread.sleep(200);
            }
        }
        System.err.println("Kafka at " + bootstrap + " not ready: " + last);
        System.exit(1);
    }
}
