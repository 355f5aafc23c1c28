import java.net.*;
public class Timeout {
    public static void main(String[] a) throws Exception {
        long t = System.nanoTime();
        try (Socket s = new Socket()) {
            s.connect(new InetSocketAddress(a[0], Integer.parseInt(a[1])), 2000);
            System.out.print("connected");
        } catch (Exception e) {
            System.out.print("failed " + e.getClass().getSimpleName());
        }
        System.out.printf(java.util.Locale.ROOT, " after=%.2f%n", (System.nanoTime() - t) / 1e9);
    }
}
