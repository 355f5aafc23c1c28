import java.net.*;
public class Vhosts {
    public static void main(String[] a) {
        for (int i = 0; i < a.length; i++) {
            try {
                HttpURLConnection c = (HttpURLConnection) new URL(a[i]).openConnection();
                c.setConnectTimeout(10000);
                c.setReadTimeout(10000);
                String b = new String(c.getInputStream().readAllBytes());
                System.out.println(i + " " + b.replaceAll("\\s+", " "));
            } catch (Exception e) {
                System.out.println(i + " ERR " + e);
            }
        }
    }
}
